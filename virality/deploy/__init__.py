"""Using a trained model: releases, deploy-net input, prediction, nearest neighbours."""
