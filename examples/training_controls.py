"""Training controls on digits: your own validation set, early stopping on the validation loss,
a cosine learning-rate schedule with warm-up, and per-epoch callbacks (scikit-learn >= 1.9).

    python examples/training_controls.py
"""

import os
import tempfile

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sknn import MLPClassifier, callbacks
from sknn.schedules import CosineAnnealing

X, y = load_digits(return_X_y=True)
X = (X / 16.0).astype(np.float32)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
X_train, X_val, y_train, y_val = train_test_split(X_train, y_train, test_size=0.2,
                                                  random_state=0)

clf = MLPClassifier((128,), max_iter=100, learning_rate_init=0.01, early_stopping=True,
                    scoring="loss", learning_rate_schedule=CosineAnnealing(warmup=5),
                    random_state=0)
log = os.path.join(tempfile.mkdtemp(), "history.csv")
if callbacks.AVAILABLE:  # scikit-learn >= 1.9
    clf.set_callbacks(callbacks.HistoryLogger(log), callbacks.TimeBudget(seconds=30))

clf.fit(X_train, y_train, X_val=X_val, y_val=y_val)

best = int(np.argmax(clf.validation_scores_))
print(f"epochs run: {clf.n_iter_}; best epoch: {best + 1}, "
      f"validation loss {clf.validation_loss_curve_[best]:.4f}")
print("learning rate, first 6 epochs:", [f"{r:.2e}" for r in clf.learning_rate_curve_[:6]])
print(f"test accuracy (best epoch's weights): {clf.score(X_test, y_test):.4f}")
if callbacks.AVAILABLE:
    with open(log) as f:
        lines = f.read().splitlines()
    print(f"{log}: {len(lines) - 1} epochs logged; header: {lines[0]}")
