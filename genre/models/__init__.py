"""Models: the scikit-learn baselines here; the Gluon networks and the GluonCV zoo bridge beside them."""

# How a user lists the GluonCV classifier names `NetworkSpec.model` accepts: `genre.models.zoo` run as a script. Here,
# below both, so that the light `spec` (which names it in help) and the zoo (which names it in errors) share it.
LIST_COMMAND = "python -m genre.models.zoo"
