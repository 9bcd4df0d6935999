"""Datasets, as one import for code written against earlier genzoo versions: the names now live
in small modules of their own, and no core module imports this one.

- ``genzoo.core.data_config``: ``DataConfig`` (the ``data.*`` section), ``data_root``;
- ``genzoo.core.datasets``: the ``Dataset`` interface, ``ImageData``, ``TensorData``,
  ``PointData``, ``to_float``, ``split_index``;
- ``genzoo.core.batching``: ``StepBatches``, ``batches``, ``batch_to_device``;
- ``genzoo.core.sources``: ``load`` and the built-in sources (``SOURCES``);
- ``genzoo.core.image_folder``: the decoded, memory-mappable image-folder cache.

Family code imports these names from ``genzoo.family`` instead.
"""
from genzoo.core.batching import StepBatches, batch_to_device, batches
from genzoo.core.data_config import DataConfig, data_root
from genzoo.core.datasets import Dataset, ImageData, PointData, TensorData, split_index, to_float
from genzoo.core.image_folder import IMAGE_SUFFIXES, load_image_folder
from genzoo.core.sources import (SOURCES, load, load_embedded, load_folder, load_kaggle,
                                 load_torchvision)

__all__ = ["DataConfig", "data_root", "Dataset", "ImageData", "PointData", "TensorData",
           "split_index", "to_float", "StepBatches", "batch_to_device", "batches", "SOURCES",
           "load", "load_embedded", "load_folder", "load_kaggle", "load_torchvision",
           "IMAGE_SUFFIXES", "load_image_folder"]
