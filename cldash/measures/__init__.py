"""Pure measurements: continual-learning metrics of an accuracy matrix, the algebra and spectra of factored updates."""
