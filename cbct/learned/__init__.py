"""What the learned stages (:mod:`cbct.bbc`, :mod:`cbct.sbp_mac`) share: the weights format, the training
configuration, the device, the training loop, the train/eval command lines and the evaluation tables.

Layering: this package imports only torch and the core below it; the stage packages import it, never the reverse.
"""
