"""SBP-MAC: motion-artifact correction of CBCT from segmented backprojection tensors (torch).

Modules: :mod:`~cbct.sbp_mac.data` (training data), :mod:`~cbct.sbp_mac.model` (network),
:mod:`~cbct.sbp_mac.loss`, :mod:`~cbct.sbp_mac.train` (``cbct train sbp-mac``), :mod:`~cbct.sbp_mac.evaluate`
(``cbct eval sbp-mac``), :mod:`~cbct.sbp_mac.stage` (the pipeline stage). torch is imported only by those that need it.
"""
