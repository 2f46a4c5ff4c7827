"""The Hydra configs of the command-line apps, shipped as package data (found as ``pkg://lxmert_repro.configs``)."""
