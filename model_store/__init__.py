"""The contract between training and serving: model, Ω, id codec, inference engine and bundle format."""
