"""Model DNA (Mu et al., "Model DNA", ECAI 2024): a learned provenance detector.

For probe inputs x, a model's DNA is DNA(M, x) = g(x) + view(M(x)): a trained encoder g of the
input plus a view of the model's own outputs at g's width. Stage 1 trains g contrastively so that a
source's DNA is close to its derived models' on the same x and far from independent models';
stage 2 trains a classifier giving P(derived) from a pair's DNAs. One concept per module:

  views         output views: raw probabilities, or size-free sorted probabilities (other label spaces)
  encoder       g
  contrastive   stage 1's loss
  classifier    stage 2: the siamese embedding h and the P(derived) head
  detector      a trained detector: save (orbax + JSON), load (untrusted), input-space check
  train         the resumable optax loop of both stages on a zoo's outputs

`jaxprov.methods.dna` makes a detector a signature method; `jaxprov.bench.dna` builds the training
zoo (lineages disjoint from the reuse benchmark's val and test groups) and evaluates.
"""

from jaxprov.dna.detector import Architecture, Detector, DetectorError, load
from jaxprov.dna.train import TrainConfig, TrainingSet, train

__all__ = ["Architecture", "Detector", "DetectorError", "TrainConfig", "TrainingSet", "load", "train"]
