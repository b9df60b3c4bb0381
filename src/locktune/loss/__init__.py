from locktune.loss.contrastive import contrastive_loss, gather_with_grad

__all__ = ["contrastive_loss", "gather_with_grad"]
