"""The torch GMM engine against sklearn: same start, same fit; k-means++ init; chunking; BIC grid."""

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture

from recipe_mil.recipes.gmm import fit_gmm
from recipe_mil.recipes.gmm_torch import TorchGaussianMixture


def _blobs(seed: int = 0, n: int = 300, d: int = 5):
    rng = np.random.default_rng(seed)
    centres = np.array([0.0, 4.0, 8.0, -4.0])
    x = np.concatenate([rng.normal(c, 1 + 0.3 * i, size=(n, d)) for i, c in enumerate(centres)])
    return x, np.repeat(np.arange(4), n)


def _start(x, covariance_type):
    init = TorchGaussianMixture(4, covariance_type=covariance_type, max_iter=0, dtype="float64", device="cpu")
    init.fit(x)
    return {"weights_init": init.weights_, "means_init": init.means_, "precisions_init": init.precisions_}


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_same_start_gives_sklearns_fit(covariance_type):
    x, _ = _blobs()
    start = _start(x, covariance_type)
    opts = {"covariance_type": covariance_type, "tol": 1e-6, "max_iter": 50, "reg_covar": 1e-4}
    sk = GaussianMixture(4, init_params="random_from_data", **opts, **start).fit(x)
    # float64 with an odd chunk size: equal to machine precision
    ours = TorchGaussianMixture(4, dtype="float64", device="cpu", chunk_size=97, **opts, **start).fit(x)
    assert ours.n_iter_ == sk.n_iter_ and ours.converged_
    assert ours.lower_bound_ == pytest.approx(sk.lower_bound_, abs=1e-10)
    np.testing.assert_allclose(ours.means_, sk.means_, atol=1e-10)
    np.testing.assert_allclose(ours.covariances_, sk.covariances_, atol=1e-10)
    np.testing.assert_allclose(ours.weights_, sk.weights_, atol=1e-12)
    np.testing.assert_allclose(ours.predict_proba(x), sk.predict_proba(x), atol=1e-10)
    assert ours.bic(x) == pytest.approx(sk.bic(x), rel=1e-12)
    # float32 (the default): the same fit within float tolerance
    ours32 = TorchGaussianMixture(4, device="cpu", **opts, **start).fit(x)
    np.testing.assert_allclose(ours32.means_, sk.means_, atol=1e-4)
    np.testing.assert_allclose(ours32.covariances_, sk.covariances_, atol=1e-4)
    assert ours32.score(x) == pytest.approx(sk.score(x), abs=1e-5)
    assert (ours32.predict(x) == sk.predict(x)).mean() == 1.0


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_kmeanspp_init_finds_the_blobs_as_well_as_sklearn(covariance_type):
    x, truth = _blobs(seed=1)
    ours = TorchGaussianMixture(4, covariance_type=covariance_type, reg_covar=1e-4, device="cpu", random_state=3)
    ours.fit(x)
    sk = GaussianMixture(4, covariance_type=covariance_type, reg_covar=1e-4, random_state=3).fit(x)
    assert adjusted_rand_score(truth, ours.predict(x)) > 0.95
    assert ours.score(x) >= sk.score(x) - 1e-3
    # seeded: the same seed gives the same fit
    again = TorchGaussianMixture(4, covariance_type=covariance_type, reg_covar=1e-4, device="cpu", random_state=3)
    np.testing.assert_array_equal(again.fit(x).means_, ours.means_)


def test_chunking_does_not_change_the_fit():
    x, _ = _blobs(seed=2)
    a = TorchGaussianMixture(4, dtype="float64", device="cpu", random_state=0, chunk_size=50).fit(x)
    b = TorchGaussianMixture(4, dtype="float64", device="cpu", random_state=0, chunk_size=100_000).fit(x)
    np.testing.assert_allclose(a.means_, b.means_, atol=1e-9)
    assert a.n_iter_ == b.n_iter_


def test_collapsed_component_error_is_clear():
    x = np.zeros((20, 3))
    with pytest.raises(ValueError, match="ill-defined covariance"):
        TorchGaussianMixture(2, reg_covar=0.0, device="cpu").fit(x)


@pytest.mark.parametrize("engine", ["torch", "sklearn"])
def test_bic_grid_picks_the_true_k_on_a_subsample_then_refits(engine):
    x, truth = _blobs(seed=4, n=400)
    fit = fit_gmm(x, [2, 4, 6], subsample=600, seed=0, engine=engine, n_init=2, device="cpu")
    # the grid and the optimum's neighbours (refinement: 3 and 5)
    assert fit.n_components == 4 and set(fit.bic) == {2, 3, 4, 5, 6}
    assert adjusted_rand_score(truth, fit.predict(x)) > 0.95
    assert fit.predict_proba(x).shape == (len(x), 4)


def test_engines_agree_on_the_bic_choice_and_clusters():
    x, _ = _blobs(seed=5)
    a = fit_gmm(x, [3, 4, 5], seed=1, engine="torch", device="cpu", n_init=2)
    b = fit_gmm(x, [3, 4, 5], seed=1, engine="sklearn", n_init=2)
    assert a.n_components == b.n_components == 4
    assert adjusted_rand_score(a.predict(x), b.predict(x)) > 0.99
    # at the true K both reach the same optimum (a wrong K may land in different local optima)
    assert a.bic[4] == pytest.approx(b.bic[4], rel=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_fit_matches_cpu():
    x, _ = _blobs(seed=6)
    start = _start(x, "full")
    cpu = TorchGaussianMixture(4, device="cpu", tol=1e-6, **start).fit(x)
    gpu = TorchGaussianMixture(4, device="cuda", tol=1e-6, **start).fit(x)
    np.testing.assert_allclose(gpu.means_, cpu.means_, atol=1e-3)
    assert (gpu.predict(x) == cpu.predict(x)).mean() > 0.999
