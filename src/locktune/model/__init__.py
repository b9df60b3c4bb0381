from locktune.model.two_tower import TwoTower, build_model

__all__ = ["TwoTower", "build_model"]
