import subprocess
import sys


def test_import_stays_light_and_exports_the_api():
    code = ("import sys, re_analysis as r; "
            "heavy = [m for m in ('faiss', 'umap', 'papermill', 'seaborn', 'opacus', 'jupyter_book') if m in sys.modules]; "
            "assert not heavy, heavy; "
            "names = ['RandomErasing', 'extract_features', 'attack_accuracy', 'knn_distance', 'feature_gap', "
            "'umap_embed', 'train', 'run_attack', 'run_study']; "
            "assert all(callable(getattr(r, n)) for n in names)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
