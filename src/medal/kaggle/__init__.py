"""kaggle: pack experiments, medal's wheels and an offline kernel for a Kaggle code competition."""
from medal.kaggle.pack import pack

__all__ = ["pack"]
