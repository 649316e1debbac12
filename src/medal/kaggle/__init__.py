"""kaggle: pack experiments and a kernel for an offline Kaggle code competition (being built, issue 11)."""
