"""The credit-scoring pipeline around the model: binning with WOE / IV, selection, stability, preparation,
scorecard.

* :mod:`~atoll.ml.feature.binning` — bins (quantile, bucket, ChiMerge, categories, a missing bin) and
  WOE / IV, pure functions, and the centralised twin :func:`~atoll.ml.feature.binning.plain_binning`;
* :mod:`~atoll.ml.feature.hetero_binning` — WOE / IV of the hosts' features under HE (the labels stay
  at the guest, the host learns nothing by default);
* :mod:`~atoll.ml.feature.selection` — selection by IV, missing rate, unique values, variance and lists,
  each party learning only which of its own columns stay;
* :mod:`~atoll.ml.feature.stability` — population / characteristic stability indexes;
* :mod:`~atoll.ml.feature.prepare` — imputation, one-hot / ordinal encoding, capping;
* :mod:`~atoll.ml.feature.scorecard` — points per bin from a logistic model on WOE features.
"""
