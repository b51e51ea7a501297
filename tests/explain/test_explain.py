"""Feature maps, filters, Grad-CAM and saliency: shapes, alignment, the CLI, and Adebayo et al.'s sanity checks."""

import numpy as np
import pytest
import torch
from PIL import Image

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.data import load_dataset
from cnnzoo.errors import CnnzooError
from cnnzoo.explain import (
    METHODS,
    dense_activations,
    feature_layers,
    feature_maps,
    first_layer_filters,
    gradcam,
    ink_overlap,
    randomized_copy,
    rank_correlation,
    saliency,
)
from cnnzoo.explain.maps import _probe_centres

N_DIGITS = 48


@pytest.fixture(scope="module")
def predictor(lenet_source):
    return cnnzoo.load(lenet_source)


@pytest.fixture(scope="module")
def digits():
    test = load_dataset("mnist").test
    return [test.images[i, 0].numpy() for i in range(N_DIGITS)]  # (28, 28) uint8, white ink on black


def test_feature_maps_are_every_conv_and_pool_output_in_forward_order(predictor, digits):
    x = predictor.preprocess(digits[:3])
    layers = feature_maps(predictor.model, x)
    assert [(lm.name, lm.kind) for lm in layers] == feature_layers(predictor.model)
    assert [lm.kind for lm in layers] == ["conv", "pool", "conv", "pool"]
    assert [lm.maps.shape for lm in layers] == [
        (3, 6, 28, 28),
        (3, 6, 14, 14),
        (3, 16, 10, 10),
        (3, 16, 5, 5),
    ]
    assert predictor.model.training is False


def test_dense_activations_are_what_each_fully_connected_layer_hands_on(predictor, digits):
    x = predictor.preprocess(digits[:3])
    model = predictor.model
    acts = dense_activations(model, x)
    assert [(a.name, a.values.shape) for a in acts] == [
        ("classifier.0", (3, 120)),
        ("classifier.2", (3, 84)),
        ("classifier.4", (3, 10)),
    ]
    with torch.inference_mode():  # by hand: through the layers, the ReLU after each hidden one
        h = torch.flatten(model.forward_features(x), 1)
        c5 = torch.relu(model.classifier[0](h))
        f6 = torch.relu(model.classifier[2](c5))
        expected = [c5, f6, model(x)]
    for a, e in zip(acts, expected, strict=True):
        np.testing.assert_allclose(a.values, e.numpy(), atol=1e-5)
    # LeNet-5 of 1998: F6 (84, after its scaled tanh) and the RBF output (its classifier, not a Linear)
    paper = cnnzoo.create_model("lenet5_1998", num_classes=10, in_chans=1).eval()
    acts = dense_activations(paper, x)
    assert [(a.name, a.values.shape) for a in acts] == [("f6.0", (3, 84)), ("output", (3, 10))]
    assert np.abs(acts[0].values).max() <= 1.7159 + 1e-6  # A tanh(S a): the activation, not the sum
    with torch.inference_mode():
        np.testing.assert_allclose(acts[1].values, -paper(x).numpy(), rtol=1e-5, atol=1e-4)  # logits = -y


def test_a_conv_output_is_kept_before_an_in_place_relu():
    model = cnnzoo.create_model("resnet20", num_classes=10, in_chans=1).eval()
    layers = feature_maps(model, torch.randn(2, 1, 32, 32))
    stem = layers[0]
    assert stem.kind == "conv" and stem.maps.min() < 0  # the ReLU after it (in place) did not overwrite it


def test_first_layer_filters(predictor):
    assert first_layer_filters(predictor.model).shape == (6, 1, 5, 5)


def test_gradcam_cells_are_placed_where_they_look(predictor, digits):
    """LeNet-5's last stage is a 5x5 map of a 32x32 padded input: its rows and columns look at input
    pixels 5.5, 9.5, ..., 21.5 of the 28x28 image (4 apart), not at 0 ... 27 as plain upsampling assumes.
    The outer ones read past the image (into the padding), so their measured centres lie a little inside."""
    model = predictor.model
    x = predictor.preprocess(digits[:1])
    rows, cols = _probe_centres(model, model.get_submodule("features.6"), x, 5, 5)
    expected = np.array([5.5, 9.5, 13.5, 17.5, 21.5])
    for measured in (rows, cols):
        assert np.abs(measured - expected).max() < 1.5, measured
        assert np.all(np.diff(measured) > 2.5)


def test_gradcam_and_saliency_shapes_targets_and_layers(predictor, digits):
    x = predictor.preprocess(digits[:4])
    cam = gradcam(predictor.model, x)
    assert cam.maps.shape == (4, 28, 28) and cam.maps.min() >= 0 and cam.maps.max() <= 1
    assert cam.layer == "features.6"  # the last conv stage
    assert cam.target == cam.logits.argmax(1).tolist()
    assert gradcam(predictor.model, x, target=3).target == [3, 3, 3, 3]
    assert gradcam(predictor.model, x, layer="features.3").layer == "features.3"
    with pytest.raises(CnnzooError, match="no layer"):
        gradcam(predictor.model, x, layer="features.99")
    with pytest.raises(CnnzooError, match="target class"):
        gradcam(predictor.model, x, target=10)
    sal = saliency(predictor.model, x)
    assert sal.maps.shape == (4, 28, 28) and sal.maps.max() == pytest.approx(1.0)


def test_rank_correlation():
    a = np.arange(20.0)
    assert rank_correlation(a, a**3) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    assert rank_correlation(a, np.zeros(20)) == 0.0
    assert rank_correlation(np.array([0, 0, 1, 2.0]), np.array([0, 0, 1, 2.0])) == pytest.approx(1.0)  # ties


def test_sanity_maps_change_when_the_weights_are_randomised(predictor, digits):
    """Adebayo et al. 2018: an explanation of the trained model and of the same model with random weights
    must differ; here their mean Spearman rank correlation over MNIST digits is below 0.5."""
    x = predictor.preprocess(digits)
    random_model = randomized_copy(predictor.model, seed=0)
    assert not torch.equal(random_model.features[1].weight, predictor.model.features[1].weight)
    for method in (gradcam, saliency):
        trained, randomised = method(predictor.model, x), method(random_model, x)
        rho = np.mean([rank_correlation(a, b) for a, b in zip(trained.maps, randomised.maps, strict=True)])
        print(f"{method.__name__}: mean rank correlation trained vs randomised {rho:.3f}")
        assert rho < 0.5, (method.__name__, rho)


def test_sanity_gradcam_top_region_lies_on_the_ink_more_than_a_random_maps(predictor, digits):
    x = predictor.preprocess(digits)
    cam = gradcam(predictor.model, x)
    rng = np.random.default_rng(0)
    ours = np.mean([ink_overlap(h, d) for h, d in zip(cam.maps, digits, strict=True)])
    chance = np.mean([ink_overlap(rng.random((28, 28)), d) for d in digits])
    print(f"share of Grad-CAM's top region on the ink {ours:.3f}, of a random map's {chance:.3f}")
    assert ours > chance


def test_cli_writes_pngs_for_every_method(lenet_source, digits, tmp_path, capsys):
    assert set(METHODS) == {"featuremaps", "filters", "gradcam", "saliency"}  # each one is run below
    paths = []
    for i in range(2):
        p = tmp_path / f"digit{i}.png"
        Image.fromarray(digits[i]).save(p)
        paths.append(str(p))
    out = tmp_path / "out"
    for method in ("featuremaps", "gradcam", "saliency"):
        assert main(["explain", lenet_source, *paths, "--method", method, "--out", str(out)]) == 0
    assert main(["explain", lenet_source, "--method", "filters", "--out", str(out)]) == 0
    written = capsys.readouterr().out.split()
    names = sorted(p.name for p in out.iterdir())
    assert sorted(n.split("/")[-1] for n in written) == names
    assert "filters.png" in names
    assert "digit0-input.png" in names and "digit1-04-pool-features.6.png" in names
    assert any(n.startswith("digit0-gradcam-") for n in names) and any(
        n.startswith("digit1-saliency-") for n in names
    )
    with Image.open(out / "filters.png") as im:
        assert min(im.size) >= 224  # enlarged to be seen
    assert main(["explain", lenet_source, "--method", "gradcam", "--out", str(out)]) == 2
    assert "needs at least one image" in capsys.readouterr().err
    assert (
        main(["explain", lenet_source, paths[0], "--method", "saliency", "--target", "x", "--out", str(out)])
        == 2
    )
    assert "unknown class" in capsys.readouterr().err


def test_gradcam_skips_a_last_stage_of_one_cell():
    """LeNet-5 (1998)'s last stage, C5, is 120 maps of 1x1: no place to point at. Grad-CAM takes S4."""
    model = cnnzoo.create_model("lenet5_1998").eval()
    cam = gradcam(model, torch.randn(2, 1, 32, 32))
    assert cam.layer == "features.8" and cam.maps.shape == (2, 32, 32)
    assert [kind for _, kind in feature_layers(model)] == ["conv", "pool", "conv", "pool", "conv"]
