//! `exchange bench`: measured on the machine it runs on. Placeholder until filled in.

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_: Args) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
