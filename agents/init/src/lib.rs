//! crust init. Being written.
