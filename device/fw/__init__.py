"""sealkeep drive firmware."""
