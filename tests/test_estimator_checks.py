"""scikit-learn's own estimator checks, on default-constructed estimators, none expected to fail."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sknn import ConvNetClassifier, MLPClassifier, MLPRegressor, PretrainedFeatureExtractor


@parametrize_with_checks(
    [MLPClassifier(), MLPRegressor(), ConvNetClassifier(), PretrainedFeatureExtractor()])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
