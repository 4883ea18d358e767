//! Unit-file model (systemd syntax). Filled by the init work; see agents/init/README.md.
