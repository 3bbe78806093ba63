"""Find the data set, describe it, label it, split it by patient, decode and load it."""
