"""Reproductions of the paper's claims at toy scale: runs and their report."""
