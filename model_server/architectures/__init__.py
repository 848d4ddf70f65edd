"""Zoo architectures in plain torch, one module per family; registered in model_server/zoo.py."""
