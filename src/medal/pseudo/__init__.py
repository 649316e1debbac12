"""pseudo: confident test predictions of a blend, as an extra training table."""
