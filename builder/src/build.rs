//! Build orchestration. Being written.
#[derive(clap::Args, Debug)]
pub struct BuildArgs {}
pub fn run(_args: &BuildArgs) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}
