"""Money: the price table per model (:mod:`.prices`, ``prices.json``) and the cost arithmetic (:mod:`.costs`)."""
