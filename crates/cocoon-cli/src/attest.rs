//! `cocoon attest …`: attestation tools (certificates, quote inspection, self-check).

use clap::Subcommand;

/// Subcommands of `cocoon attest`.
#[derive(Debug, Subcommand)]
pub enum AttestCommand {
    /// Say what kind of attestation this machine can produce (tdx or none) and why.
    #[command(name = "self")]
    SelfCheck,
}

/// Runs one `cocoon attest` subcommand.
pub fn run(cmd: AttestCommand) -> anyhow::Result<()> {
    match cmd {
        AttestCommand::SelfCheck => {
            anyhow::bail!("attestation support is not built yet")
        }
    }
}
