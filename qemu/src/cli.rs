//! `crust cluster ...`. Being written.
#[derive(clap::Args)]
pub struct ClusterArgs {}
pub fn run(_args: ClusterArgs) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}
