"""The classifier-based numbers of jobs.evaluate: PANNs CNN14 loaded offline through its checkpoint format, and
FD, KL, IS and SSMS on inputs with known answers."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch

from foley.config import ClassifierConfig, StorageConfig
from foley.models.frechet import frechet_distance
from foley.models.panns import AudioClassifier, audioset_labels
from foley.pipeline.evaluation import inception_score, kl_divergences, source_matching
from foley.storage.store import Storage
from foley.testing.random_models import TINY_CNN14_WIDTHS, save_cnn14


@pytest.fixture
def network_off(monkeypatch):
    """Any connection beyond loopback fails, as on a machine with no network."""
    connect = socket.socket.connect

    def loopback_only(self, address):
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "localhost", "::1"):
            raise OSError(f"network is off: no connection to {address[0]}")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)


def test_cnn14_loads_from_a_folder_and_from_s3_with_the_network_off(tmp_path, bucket, network_off):
    name, storage = bucket
    checkpoint = save_cnn14(tmp_path / "panns" / "cnn14.pth", TINY_CNN14_WIDTHS, seed=3)
    storage.publish(checkpoint, f"s3://{name}/models/panns/cnn14.pth")
    waves = [np.sin(np.arange(16000 * 3) * 0.05).astype(np.float32), np.zeros(16000, np.float32)]
    outputs = []
    places = ((str(checkpoint), Storage(StorageConfig())), (f"s3://{name}/models/panns/cnn14.pth", storage))
    for location, store in places:
        classifier = AudioClassifier(ClassifierConfig(checkpoint=location), store, torch.device("cpu"))
        outputs.append(classifier.classify(waves))
    assert outputs[0].shape == (2, 527 + TINY_CNN14_WIDTHS[-1])  # logits, then the embedding
    np.testing.assert_array_equal(outputs[0], outputs[1])  # the same weights either way
    assert classifier.labels[0] == "Speech" and len(classifier.labels) == 527  # laion_clap's AudioSet names
    # A window's scores do not depend on the windows it shares a batch with (a short last window is not padded).
    np.testing.assert_allclose(classifier.classify(waves[1:]), outputs[0][1:], rtol=1e-5, atol=1e-6)
    assert not np.allclose(outputs[0][0], outputs[0][1])  # and they depend on the sound
    with pytest.raises(OSError, match="network is off"):
        socket.create_connection(("203.0.113.1", 80), timeout=1)  # the guard is on


def test_a_checkpoint_and_labels_that_disagree_are_named(tmp_path):
    checkpoint = save_cnn14(tmp_path / "cnn14.pth", TINY_CNN14_WIDTHS)
    labels = tmp_path / "labels.txt"
    labels.write_text("dog\ncat\n")
    with pytest.raises(ValueError, match="has 527 classes but its labels name 2"):
        AudioClassifier(ClassifierConfig(checkpoint=str(checkpoint), labels=str(labels)), None, torch.device("cpu"))
    assert audioset_labels(str(labels)) == ["dog", "cat"]
    (tmp_path / "other.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="other.pth"):
        AudioClassifier(ClassifierConfig(checkpoint=str(tmp_path / "other.pth")), None, torch.device("cpu"))


def test_identical_sets_give_fd_and_kl_zero():
    rng = np.random.default_rng(0)
    embeddings, logits = rng.standard_normal((40, 8)), rng.standard_normal((40, 527)) * 3
    assert frechet_distance(embeddings, embeddings) == pytest.approx(0.0, abs=1e-6)
    for values in kl_divergences(logits, logits, 1e-6).values():
        np.testing.assert_allclose(values, 0.0, atol=1e-3)
    assert frechet_distance(embeddings, embeddings + 1.0) == pytest.approx(8.0, rel=1e-6)  # the means 1 apart in 8-d


def test_kl_matches_a_hand_computed_three_label_case():
    third = math.log(1 / 3)
    reference, generated = np.array([[0.0, third, third]]), np.array([[third, 0.0, third]])
    kl = kl_divergences(generated, reference, 1e-12)
    # softmax: reference (0.6, 0.2, 0.2), generated (0.2, 0.6, 0.2): 0.6 ln 3 + 0.2 ln(1/3) = 0.4 ln 3
    assert kl["softmax"][0] == pytest.approx(0.4 * math.log(3), rel=1e-6)
    # sigmoid: reference (0.5, 0.25, 0.25), generated (0.25, 0.5, 0.25): 0.5 ln 2 + 0.25 ln(1/2) = 0.25 ln 2
    assert kl["sigmoid"][0] == pytest.approx(0.25 * math.log(2), rel=1e-6)


def test_ssms_is_zero_for_disjoint_labels_and_matches_a_hand_computed_three_label_case():
    reference, generated = np.array([[3.0, 2.0, 1.0]]), np.array([[1.0, 2.0, 3.0]])
    disjoint = source_matching(generated, reference, reference_top=1, generated_top=2)  # {0} against {2, 1}
    assert (disjoint["precision"][0], disjoint["recall"][0], disjoint["f1"][0]) == (0.0, 0.0, 0.0)
    overlap = source_matching(generated, reference, reference_top=2, generated_top=2)  # {0, 1} against {2, 1}
    assert (overlap["precision"][0], overlap["recall"][0], overlap["f1"][0]) == (0.5, 0.5, 0.5)
    wide = source_matching(generated, reference, reference_top=1, generated_top=3)  # {0} against all three
    assert (wide["precision"][0], wide["recall"][0]) == (pytest.approx(1 / 3), 1.0)
    assert wide["f1"][0] == pytest.approx(2 * (1 / 3) / (1 / 3 + 1))


def test_inception_score_is_one_for_one_distribution_and_k_for_k_sure_distinct_classes():
    same = np.tile(np.array([[1.0, 2.0, 0.5, -1.0]]), (6, 1))
    assert inception_score(same, splits=1)[0] == pytest.approx(1.0)
    sure = np.full((4, 10), -50.0)
    sure[np.arange(4), [0, 3, 5, 9]] = 50.0  # four windows, each sure of its own class
    mean, spread = inception_score(sure, splits=1)
    assert mean == pytest.approx(4.0, rel=1e-6) and spread == 0.0
    assert inception_score(sure, splits=10)[0] == pytest.approx(1.0)  # 4 parts of one window each
