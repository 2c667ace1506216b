"""The online half of ELMRec: a FastAPI recommendation service on a trained model bundle."""
