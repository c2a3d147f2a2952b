"""The training loss: softmax cross-entropy on integer genre labels, optionally with label smoothing.

Label smoothing trains against `(1 - eps)` on the true genre and `eps / genres` spread over all of them, so a
network fine-tuned on a thousand covers is not pushed towards certainty it cannot have. Evaluation always uses the
plain cross-entropy, so validation losses stay comparable across settings.
"""

from __future__ import annotations

from mxnet import gluon


class SmoothedCrossEntropy(gluon.loss.Loss):
    """Cross-entropy of `(N, genres)` logits against sparse labels `(N,)`, smoothed by `smoothing` in [0, 1)."""

    def __init__(self, smoothing: float = 0.0, **kwargs) -> None:
        super().__init__(weight=None, batch_axis=0, **kwargs)
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = smoothing

    def hybrid_forward(self, F, logits, labels):
        log_probabilities = F.log_softmax(logits, axis=-1)
        true_genre = -F.pick(log_probabilities, labels, axis=-1)
        if not self.smoothing:
            return true_genre
        uniform = -F.mean(log_probabilities, axis=-1)
        return (1.0 - self.smoothing) * true_genre + self.smoothing * uniform


def training_loss(smoothing: float) -> gluon.loss.Loss:
    """The loss `train_one_epoch` minimises: the plain cross-entropy when `smoothing` is 0."""
    return SmoothedCrossEntropy(smoothing) if smoothing else gluon.loss.SoftmaxCrossEntropyLoss()
