"""Telegram handlers, one module per concern: the guided flow, photo intake, commands, and
kind answers to everything else."""
