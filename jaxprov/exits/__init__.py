"""Multi-exit models and inference-time fingerprints: prove ownership of an early-exit model from how long
it takes to answer (Dong et al., "Fingerprinting Multi-exit Deep Neural Network Models via
Inference Time", 2021; models after Shallow-Deep Networks, Kaya et al., ICML 2019).

  staged       early-exit inference that really stops (one jitted function per segment), latency profiles
  craft        fingerprint samples aimed at chosen stop exits (L-inf PGD on an exit-control loss)
  fingerprint  the fingerprint file (samples, expected stops, owner's answers and profile; hashed)
  make         the owner's side: craft, profile, calibrate on independent models (`make.make`)
  timing       reading response times: detrended along the query order, the per-sample quantile chosen
               by split halves, exact 1-D k-means into time levels (`timing.time_levels`)
  verify       the verifier's side: timing-only verification with a p-value, and the label baseline
               (`verify.verify`, `verify.calibrate`)
  server       `jaxprov serve`: an early-exit model over HTTP (http.server)
  client       a black-box suspect over HTTP (urllib, timeouts and retries)

The functions named like their modules (`craft.craft`, `make.make`, `verify.verify`) are reached
through the module, so the package's attributes stay the modules.
"""

from jaxprov.exits import client, craft, fingerprint, make, server, staged, timing, verify  # noqa: F401
from jaxprov.exits.craft import CraftConfig  # noqa: F401
from jaxprov.exits.fingerprint import Fingerprint, load  # noqa: F401
from jaxprov.exits.staged import DEFAULT_THRESHOLD, Answer, EarlyExit, exit_rule  # noqa: F401
from jaxprov.exits.verify import InProcessSuspect, SlowedSuspect, Verification  # noqa: F401
