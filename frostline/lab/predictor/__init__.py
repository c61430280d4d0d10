"""Building the SmartFRZ predictor offline: ``collect`` records CKA-labelled weight histories from
real runs, ``fit`` trains and evaluates a predictor on them."""
