"""Federated transfer learning: two parties that overlap little in users and features.

* :mod:`~atoll.ml.transfer.hetero_ftl`: Liu et al.'s secure FTL, plain and over Paillier / OU
  (``FTLGuest``, ``FTLHost``);
* :mod:`~atoll.ml.transfer.ss_ftl`: the same model on secret shares (``SSFTLGuest``, ``SSFTLHost``);
* :mod:`~atoll.ml.transfer._ftl`: the one parameter model (``FTLParams``), the networks, the loss
  and gradient formulas, model parts (``save_part`` / ``load_part``) and the centralised twin
  (``CentralFTL``);
* :mod:`~atoll.ml.transfer.evaluation`: the reproducible transfer set-up on bundled data and the
  baselines.
"""

from atoll.ml.transfer._ftl import CentralFTL, FTLParams, FTLPartyModel, load_part, save_part

__all__ = ["CentralFTL", "FTLParams", "FTLPartyModel", "load_part", "save_part"]
