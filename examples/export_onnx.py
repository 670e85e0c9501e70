"""Export a fitted Pipeline (StandardScaler -> sknn's MLPClassifier) to ONNX and predict with
ONNX Runtime: no Python, torch or sknn needed where the model is served.

    pip install "sknn[onnx]"
    python examples/export_onnx.py
"""

import os
import tempfile

import numpy as np
import onnxruntime as rt
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import sknn.onnx  # registers sknn's converters with skl2onnx
from sknn import MLPClassifier

X, y = load_digits(return_X_y=True)
X = X.astype(np.float32)
X_train, X_test, y_train, y_test = train_test_split(X, y, stratify=y, random_state=0)
pipe = make_pipeline(StandardScaler(), MLPClassifier((64,), max_iter=200, random_state=0))
pipe.fit(X_train, y_train)

# skl2onnx.to_onnx(pipe, X_train[:1]) does the same once sknn.onnx is imported
onx = sknn.onnx.to_onnx(pipe, X_train[:1], options={"zipmap": False})
path = os.path.join(tempfile.mkdtemp(), "digits_mlp.onnx")  # the file a server would load
with open(path, "wb") as f:
    f.write(onx.SerializeToString())
print(f"saved {path}")

sess = rt.InferenceSession(path, providers=["CPUExecutionProvider"])
labels, proba = sess.run(None, {"X": X_test})
print(f"ONNX Runtime test accuracy: {np.mean(labels == y_test):.4f} "
      f"(sknn: {pipe.score(X_test, y_test):.4f})")
print(f"largest difference of the probabilities: "
      f"{np.abs(proba - pipe.predict_proba(X_test)).max():.1e}")
