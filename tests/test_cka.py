import math

import pytest
import torch

from frostline.cka import MinibatchCKA, _gram_inner, hsic1, linear_cka, minibatch_cka
from frostline.errors import ConfigError


pytestmark = pytest.mark.usefixtures("one_thread")


# -- textbook references, written from the papers' formulas with explicit n x n matrices ----------
def naive_hsic(k, l_):
    n = k.shape[0]
    h = torch.eye(n, dtype=torch.float64) - torch.full((n, n), 1.0 / n, dtype=torch.float64)
    return torch.trace(k @ h @ l_ @ h) / (n - 1) ** 2


def naive_cka(x, y):
    x = x.reshape(x.shape[0], -1).double()
    y = y.reshape(y.shape[0], -1).double()
    k, l_ = x @ x.T, y @ y.T
    return float(naive_hsic(k, l_) / torch.sqrt(naive_hsic(k, k) * naive_hsic(l_, l_)))


def song_hsic1(x, y):
    """Song et al. 2012, eq. (5), term by term with explicit matrices."""
    x = x.reshape(x.shape[0], -1).double()
    y = y.reshape(y.shape[0], -1).double()
    n = x.shape[0]
    k = x @ x.T
    l_ = y @ y.T
    k.fill_diagonal_(0.0)
    l_.fill_diagonal_(0.0)
    one = torch.ones(n, 1, dtype=torch.float64)
    term1 = torch.trace(k @ l_)
    term2 = (one.T @ k @ one) * (one.T @ l_ @ one) / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * (one.T @ k @ l_ @ one)
    return float((term1 + term2 - term3) / (n * (n - 3)))


def _data(n, p, q, seed=0, related=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, p, generator=g)
    if related:
        y = x[:, : min(p, q)] @ torch.randn(min(p, q), q, generator=g) + 0.5 * torch.randn(n, q, generator=g)
    else:
        y = torch.randn(n, q, generator=g)
    return x, y


def _orthogonal(d, seed=1):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q


@pytest.mark.parametrize("n,p,q", [(200, 10, 30), (40, 300, 500), (50, 20, 400), (60, 60, 60)])
def test_linear_cka_matches_the_centering_matrix_formula_in_both_regimes(n, p, q):
    x, y = _data(n, p, q)
    value = linear_cka(x, y)
    assert value == pytest.approx(naive_cka(x, y), rel=1e-10, abs=1e-12)
    assert 0.0 < value < 1.0
    unrelated = linear_cka(*_data(n, p, q, seed=3, related=False))
    assert unrelated == pytest.approx(naive_cka(*_data(n, p, q, seed=3, related=False)), rel=1e-10)


def test_both_forms_of_the_gram_inner_product_agree():
    x, y = _data(30, 25, 40)
    x, y = x.double(), y.double()
    gram = ((x @ x.T) * (y @ y.T)).sum()
    feature = torch.linalg.matrix_norm(y.T @ x) ** 2
    assert float(_gram_inner(x, y)) == pytest.approx(float(gram), rel=1e-12)
    assert float(gram) == pytest.approx(float(feature), rel=1e-12)
    for a in (x[:, :5], torch.cat([x, x], 1)):  # p < n and p > n for the self term
        assert float(_gram_inner(a, a)) == pytest.approx(float(((a @ a.T) ** 2).sum()), rel=1e-12)


def test_linear_cka_flattens_conv_shaped_activations_and_is_one_on_itself(batch):
    x, _ = batch  # images, (64, 1, 28, 28): 784 features > 64 samples
    conv = torch.nn.Conv2d(1, 4, 3, padding=1)
    torch.manual_seed(0)
    with torch.no_grad():
        feats = torch.relu(conv(x))  # (64, 4, 28, 28)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(feats, feats) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, feats) == pytest.approx(naive_cka(x, feats), rel=1e-10)


@pytest.mark.parametrize("n,p", [(100, 12), (20, 50)])
def test_linear_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling(n, p):
    x, y = (t.double() for t in _data(n, p, p))  # transform in float64: float32 rounding is not the point
    base = linear_cka(x, y)
    q = _orthogonal(p)
    assert linear_cka(x @ q, y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x, 7.5 * y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x + 3.0, y) == pytest.approx(base, rel=1e-10)  # centering removes shifts
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x), rel=1e-12)
    # not invariant to a general (non-isotropic) rescaling of features
    stretch = torch.linspace(0.1, 10.0, p)
    assert abs(linear_cka(x * stretch, y) - base) > 1e-3


def test_linear_cka_bad_input():
    with pytest.raises(ConfigError, match="same samples"):
        linear_cka(torch.randn(10, 3), torch.randn(11, 3))
    with pytest.raises(ConfigError, match="at least 2"):
        linear_cka(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(ConfigError, match="scalar"):
        linear_cka(torch.tensor(1.0), torch.tensor(2.0))
    assert math.isnan(linear_cka(torch.ones(10, 3), torch.randn(10, 3)))  # constant representation


@pytest.mark.parametrize("n,p,q", [(32, 8, 12), (16, 100, 70), (5, 3, 9)])
def test_unbiased_hsic_matches_song_et_al(n, p, q):
    x, y = _data(n, p, q)
    assert hsic1(x, y) == pytest.approx(song_hsic1(x, y), rel=1e-9, abs=1e-9)
    assert hsic1(x, x) == pytest.approx(song_hsic1(x, x), rel=1e-9)


def test_unbiased_hsic_is_shift_invariant_and_needs_four_samples():
    # shift in float64: a float32 shift alone rounds the inputs by ~1e-7 relative
    x, y = (t.double() for t in _data(20, 6, 6))
    assert hsic1(x + 5.0, y - 2.0) == pytest.approx(hsic1(x, y), rel=1e-8)
    with pytest.raises(ConfigError, match="more than 3 samples"):
        hsic1(torch.randn(3, 4), torch.randn(3, 4))
    acc = MinibatchCKA()
    with pytest.raises(ConfigError, match="more than 3 samples"):
        acc.update(torch.randn(3, 4), torch.randn(3, 4))
    with pytest.raises(ConfigError, match="no data"):
        acc.compute()
    with pytest.raises(ConfigError, match="same samples"):
        acc.update(torch.randn(8, 4), torch.randn(9, 4))


def test_minibatch_cka_sums_unbiased_hsic_over_batches(batch):
    x, _ = batch
    torch.manual_seed(0)
    layer = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 32), torch.nn.ReLU())
    with torch.no_grad():
        feats = layer(x)
    pairs = [(x[i : i + 16], feats[i : i + 16]) for i in range(0, 64, 16)]
    xy = sum(song_hsic1(a, b) for a, b in pairs)
    xx = sum(song_hsic1(a, a) for a, _ in pairs)
    yy = sum(song_hsic1(b, b) for _, b in pairs)
    expected = xy / math.sqrt(xx * yy)
    assert minibatch_cka(pairs) == pytest.approx(expected, rel=1e-9)

    acc = MinibatchCKA()
    for a, b in pairs[:2]:
        acc.update(a, b)
    resumed = MinibatchCKA()
    resumed.load_state_dict(acc.state_dict())
    for a, b in pairs[2:]:
        resumed.update(a, b)
    assert resumed.compute() == pytest.approx(expected, rel=1e-9)
    assert resumed.batches == 4 and resumed.samples == 64

    same = MinibatchCKA()
    for a, _ in pairs:
        same.update(a, a)
    assert same.compute() == pytest.approx(1.0, abs=1e-12)


def test_minibatch_cka_is_invariant_to_orthogonal_transforms_and_scaling():
    x, y = (t.double() for t in _data(96, 10, 10))
    q = _orthogonal(10)
    base = minibatch_cka((x[i : i + 24], y[i : i + 24]) for i in range(0, 96, 24))
    turned = minibatch_cka(((x @ q)[i : i + 24], 3.0 * y[i : i + 24]) for i in range(0, 96, 24))
    assert turned == pytest.approx(base, rel=1e-9)
    # with many samples it approaches the full-data (biased) linear CKA
    assert base == pytest.approx(linear_cka(x, y), abs=0.1)
