"""A convolutional network on scikit-learn's 8x8 digits, as a plain scikit-learn classifier."""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.metrics import classification_report
from sklearn.model_selection import train_test_split

from sknn import ConvNetClassifier

X, y = load_digits(return_X_y=True)       # 64 pixel values per row, 0..16
X = (X / 16).astype(np.float32)           # float32 in [0, 1]: the fast path
X_train, X_test, y_train, y_test = train_test_split(X, y, stratify=y, random_state=0)

# Rows of 64 values are read as 8x8 grayscale images; (n, 8, 8), (n, 8, 8, 1) or (n, 1, 8, 8)
# arrays work the same.
clf = ConvNetClassifier(random_state=0).fit(X_train, y_train)
print(f"{clf.n_iter_} epochs on images of shape {clf.image_shape_}")
print(f"test accuracy: {clf.score(X_test, y_test):.4f}")
print(classification_report(y_test, clf.predict(X_test), digits=3))
