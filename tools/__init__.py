"""Developer tooling of the repository (provisioning, the stack's Go builds, the stack); not in the wheel."""
