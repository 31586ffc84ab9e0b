"""Privacy and fidelity metrics: attack accuracy, KNN distance (faiss), FID, PRDC.

Higher attack accuracy = stronger attack (weaker defense); lower KNN distance and FID =
reconstructions closer to the private data.
"""

from .accuracy import attack_accuracy
from .distribution import frechet_distance, inception_fid, prdc
from .knn import PrivateIndex, knn_distance

attack_accuracy.higher_is_better = True
knn_distance.higher_is_better = False
frechet_distance.higher_is_better = False

__all__ = ["attack_accuracy", "knn_distance", "PrivateIndex", "frechet_distance", "prdc", "inception_fid"]
