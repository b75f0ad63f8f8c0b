"""Hand-written optimisers (state keyed by dotted parameter names) and schedules."""

from numpyseg.optim.adam import Adam
from numpyseg.optim.averaging import WeightAverage
from numpyseg.optim.schedulers import CosineAnnealing, EarlyStopping, ReduceLROnPlateau
from numpyseg.optim.sgd import SGD

__all__ = ["Adam", "SGD", "ReduceLROnPlateau", "CosineAnnealing", "EarlyStopping", "WeightAverage"]
