"""Quick start: sknn's MLPClassifier in a scikit-learn Pipeline, tuned by GridSearchCV.

The only changes from scikit-learn's own example are the import lines: sknn's GridSearchCV is
scikit-learn's, except that it trains the fits that share a network shape (here, the two
learning rates x 3 folds of each layer size) as one stacked network.
"""

import warnings

from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sknn import MLPClassifier  # was: from sklearn.neural_network import MLPClassifier
from sknn.model_selection import GridSearchCV  # was: from sklearn.model_selection import ...

warnings.filterwarnings("ignore", category=ConvergenceWarning)

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, stratify=y, random_state=0)

pipe = Pipeline([
    ("scale", StandardScaler()),
    ("mlp", MLPClassifier(max_iter=100, early_stopping=True, random_state=0)),
])
grid = GridSearchCV(
    pipe,
    {"mlp__hidden_layer_sizes": [(64,), (128,), (128, 64)],
     "mlp__learning_rate_init": [1e-3, 1e-2]},
    cv=3,
)
grid.fit(X_train, y_train)

print("best parameters:", grid.best_params_)
print(f"cross-validated accuracy: {grid.best_score_:.3f}")
print(f"test accuracy: {grid.score(X_test, y_test):.3f}")
