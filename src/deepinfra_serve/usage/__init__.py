"""DeepInfra's usage routes over the usage ledger: what a key's requests cost."""
