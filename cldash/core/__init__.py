"""The vocabulary every layer shares: errors, text, the option-field language, cache paths, Hub access."""
