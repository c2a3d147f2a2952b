"""Models: the scikit-learn baselines here; the Gluon networks and the GluonCV zoo bridge beside them."""
