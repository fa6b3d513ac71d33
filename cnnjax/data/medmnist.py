"""MedMNIST v2 and MedMNIST+ (Yang et al. 2023): the official npz files.

The files are the ones the `medmnist` package downloads (Zenodo record
10519652): `<flag>.npz` at 28 pixels and `<flag>_<size>.npz` at the larger
MedMNIST+ sizes, each holding `{train,val,test}_{images,labels}` as uint8.
Images are (N, H, W) grey, (N, H, W, 3) RGB or (N, D, H, W) volumes; labels
(N, 1), or (N, 14) for ChestMNIST's multi-label task.

The benchmark's official ACC and AUC live in cnnjax/evaluators/medmnist.py
(evaluators 'medmnist' and 'auc'); the metadata's 'evaluator': 'medmnist'
makes the AUC one of a loaded subset's default metrics.
"""

from __future__ import annotations

import dataclasses
import difflib
import os

import numpy as np

from cnnjax.data.arrays import ArrayDataset
from cnnjax.errors import CnnjaxError, DataMissingError

DOWNLOAD_PAGE = "https://zenodo.org/records/10519652"
DEFAULT_DATA_DIR = "~/.medmnist"  # Where the medmnist package keeps them too.
SPLITS = ("train", "val", "test")
SIZES_2D = (28, 64, 128, 224)
SIZES_3D = (28, 64)
# Examples kept per split by `smoke=True`: the first ones of the file.
SMOKE_EXAMPLES = {"train": 512, "val": 256, "test": 256}

# medmnist's task strings and ours (see cnnjax/data/arrays.py, TASKS).
TASK_FROM_MEDMNIST = {
    "multi-class": "multiclass",
    "binary-class": "binary",
    "multi-label, binary-class": "multilabel",
    "ordinal-regression": "ordinal",
}


@dataclasses.dataclass(frozen=True)
class SubsetInfo:
  """What the benchmark states about one subset (medmnist 3.0.2, info.py)."""
  flag: str
  python_class: str      # The medmnist class that downloads it.
  medmnist_task: str     # One of TASK_FROM_MEDMNIST's keys.
  num_channels: int
  volumetric: bool       # 3D (N, D, H, W) volumes instead of 2D images.
  split_sizes: tuple[int, int, int]  # Examples in train, val, test.
  label_names: tuple[str, ...]       # Class names, or the 14 label names.

  @property
  def task(self) -> str:
    return TASK_FROM_MEDMNIST[self.medmnist_task]

  @property
  def num_classes(self) -> int:
    return len(self.label_names)

  @property
  def image_sizes(self) -> tuple[int, ...]:
    return SIZES_3D if self.volumetric else SIZES_2D

  def file_name(self, image_size: int) -> str:
    return f"{self.flag}.npz" if image_size == 28 else f"{self.flag}_{image_size}.npz"


# The 11 abdominal organs, in the order of the 2D OrganA/C/S labels; the 3D
# subset numbers the same organs differently.
_ORGANS_2D = ("bladder", "femur-left", "femur-right", "heart", "kidney-left",
              "kidney-right", "liver", "lung-left", "lung-right", "pancreas",
              "spleen")
_ORGANS_3D = ("liver", "kidney-right", "kidney-left", "femur-right",
              "femur-left", "bladder", "heart", "lung-right", "lung-left",
              "spleen", "pancreas")

_MULTI, _BINARY = "multi-class", "binary-class"

# (flag, medmnist class, task, channels, 3D, (train, val, test), label names)
_TABLE = (
    ("pathmnist", "PathMNIST", _MULTI, 3, False, (89996, 10004, 7180),
     ("adipose", "background", "debris", "lymphocytes", "mucus",
      "smooth muscle", "normal colon mucosa", "cancer-associated stroma",
      "colorectal adenocarcinoma epithelium")),
    ("chestmnist", "ChestMNIST", "multi-label, binary-class", 1, False,
     (78468, 11219, 22433),
     ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass",
      "nodule", "pneumonia", "pneumothorax", "consolidation", "edema",
      "emphysema", "fibrosis", "pleural", "hernia")),
    ("dermamnist", "DermaMNIST", _MULTI, 3, False, (7007, 1003, 2005),
     ("actinic keratoses and intraepithelial carcinoma",
      "basal cell carcinoma", "benign keratosis-like lesions",
      "dermatofibroma", "melanoma", "melanocytic nevi", "vascular lesions")),
    ("octmnist", "OCTMNIST", _MULTI, 1, False, (97477, 10832, 1000),
     ("choroidal neovascularization", "diabetic macular edema", "drusen",
      "normal")),
    ("pneumoniamnist", "PneumoniaMNIST", _BINARY, 1, False, (4708, 524, 624),
     ("normal", "pneumonia")),
    ("retinamnist", "RetinaMNIST", "ordinal-regression", 3, False,
     (1080, 120, 400), ("0", "1", "2", "3", "4")),
    ("breastmnist", "BreastMNIST", _BINARY, 1, False, (546, 78, 156),
     ("malignant", "normal, benign")),
    ("bloodmnist", "BloodMNIST", _MULTI, 3, False, (11959, 1712, 3421),
     ("basophil", "eosinophil", "erythroblast",
      "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
      "lymphocyte", "monocyte", "neutrophil", "platelet")),
    ("tissuemnist", "TissueMNIST", _MULTI, 1, False, (165466, 23640, 47280),
     ("Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
      "Glomerular endothelial cells", "Interstitial endothelial cells",
      "Leukocytes", "Podocytes", "Proximal Tubule Segments",
      "Thick Ascending Limb")),
    ("organamnist", "OrganAMNIST", _MULTI, 1, False, (34561, 6491, 17778),
     _ORGANS_2D),
    ("organcmnist", "OrganCMNIST", _MULTI, 1, False, (12975, 2392, 8216),
     _ORGANS_2D),
    ("organsmnist", "OrganSMNIST", _MULTI, 1, False, (13932, 2452, 8827),
     _ORGANS_2D),
    ("organmnist3d", "OrganMNIST3D", _MULTI, 1, True, (971, 161, 610),
     _ORGANS_3D),
    ("nodulemnist3d", "NoduleMNIST3D", _BINARY, 1, True, (1158, 165, 310),
     ("benign", "malignant")),
    ("adrenalmnist3d", "AdrenalMNIST3D", _BINARY, 1, True, (1188, 98, 298),
     ("normal", "hyperplasia")),
    ("fracturemnist3d", "FractureMNIST3D", _MULTI, 1, True, (1027, 103, 240),
     ("buckle rib fracture", "nondisplaced rib fracture",
      "displaced rib fracture")),
    ("vesselmnist3d", "VesselMNIST3D", _BINARY, 1, True, (1335, 191, 382),
     ("vessel", "aneurysm")),
    ("synapsemnist3d", "SynapseMNIST3D", _BINARY, 1, True, (1230, 177, 352),
     ("inhibitory synapse", "excitatory synapse")),
)

SUBSETS: dict[str, SubsetInfo] = {row[0]: SubsetInfo(*row) for row in _TABLE}


def subset_info(subset: str | None) -> SubsetInfo:
  """The table row of a MedMNIST flag such as 'pathmnist' (any letter case)."""
  known = ", ".join(SUBSETS)
  if not subset:
    raise CnnjaxError("MedMNIST needs a subset: set --config.dataset.subset "
                      f"to one of {known}")
  flag = str(subset).lower()
  if flag not in SUBSETS:
    close = difflib.get_close_matches(flag, list(SUBSETS), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise CnnjaxError(f"unknown MedMNIST subset '{subset}'{hint} (known: {known})")
  return SUBSETS[flag]


def load_medmnist(dataset_config, *, smoke: bool = False) -> ArrayDataset:
  """One MedMNIST subset from its official npz file, splits train/val/test.

  Options of `dataset_config`: `subset` (the flag, e.g. 'pathmnist'),
  `image_size` (28, or 64/128/224 for 2D and 64 for 3D), `data_dir` (the
  folder holding the npz files, default ~/.medmnist) and `download` (fetch a
  missing file with the `medmnist` package). Images come back as uint8 with
  the channel axis last: (N, H, W, C), or (N, D, H, W, 1) for volumes; labels
  as int32 (N,), or (N, 14) 0/1 for ChestMNIST.
  """
  info = subset_info(dataset_config.get("subset", None))
  image_size = checked_image_size(info, dataset_config.get("image_size") or 28)
  data_dir = os.path.expanduser(
      str(dataset_config.get("data_dir", None) or DEFAULT_DATA_DIR))
  path = os.path.join(data_dir, info.file_name(image_size))
  if not os.path.exists(path):
    if not dataset_config.get("download", False):
      raise DataMissingError(
          f"the MedMNIST file {path} is missing: set "
          "--config.dataset.download=true to fetch it (needs `pip install "
          f"medmnist`) or download it from {DOWNLOAD_PAGE} into {data_dir}")
    _download(info, image_size, data_dir, path)

  row_limits = {}
  if smoke:
    for split, count in SMOKE_EXAMPLES.items():
      row_limits[f"{split}_images"] = row_limits[f"{split}_labels"] = count
  arrays = _read_npz(path, row_limits)
  splits = {}
  for split in SPLITS:
    images = _channels_last(info, image_size, arrays[f"{split}_images"], path, split)
    labels = _labels(info, arrays[f"{split}_labels"], len(images), path, split)
    splits[split] = {"image": images, "label": labels}

  return ArrayDataset(
      name=info.file_name(image_size)[:-len(".npz")],
      splits=splits,
      num_classes=info.num_classes,
      task=info.task,
      metadata={"subset": info.flag, "image_size": image_size,
                "label_names": list(info.label_names), "evaluator": "medmnist",
                "medmnist_task": info.medmnist_task})


def checked_image_size(info: SubsetInfo, value) -> int:
  try:
    size = int(value)
    whole = size == float(value)  # Refuses 28.5 rather than truncating it.
  except (TypeError, ValueError):
    size, whole = None, False
  if not whole or size not in info.image_sizes:
    kind = "3D" if info.volumetric else "2D"
    raise CnnjaxError(
        f"MedMNIST {kind} subset '{info.flag}' comes in image_size "
        f"{', '.join(map(str, info.image_sizes))}, not {value!r}; set "
        "--config.dataset.image_size to one of these")
  return size


def _download(info: SubsetInfo, image_size: int, data_dir: str, path: str):
  """Fetches the file with the medmnist package (torch, torchvision, Pillow)."""
  try:
    import medmnist
  except ImportError:
    raise CnnjaxError(
        f"downloading {path} needs the medmnist package: run `pip install "
        f"medmnist`, or download the file from {DOWNLOAD_PAGE} into "
        f"{data_dir}") from None
  dataset_class = getattr(medmnist, info.python_class, None)
  if dataset_class is None:  # medmnist hides failed imports of its datasets.
    raise CnnjaxError(
        f"the installed medmnist package cannot load {info.python_class} "
        "(its dependencies torch, torchvision and Pillow are needed): run "
        f"`pip install medmnist`, or download {path} from {DOWNLOAD_PAGE}")
  os.makedirs(data_dir, exist_ok=True)  # medmnist refuses a missing root.
  try:
    dataset_class(split="train", download=True, size=image_size, root=data_dir)
  except Exception as error:  # Network, checksum and disk errors alike.
    reason = " ".join(str(error).split())[:200] or type(error).__name__
    raise CnnjaxError(
        f"downloading {path} with medmnist failed ({reason}); download it by "
        f"hand from {DOWNLOAD_PAGE} into {data_dir}") from error
  if not os.path.exists(path):
    raise CnnjaxError(f"medmnist reported a download but {path} is still "
                      f"missing; download it by hand from {DOWNLOAD_PAGE}")


def _read_npz(path: str, row_limits: dict[str, int]) -> dict[str, np.ndarray]:
  """The six arrays of an official file, each cut to `row_limits[key]` rows.

  A limited array is read only up to its last kept row, so a smoke run on
  PathMNIST at 224 pixels does not inflate 13 GB of images first.
  """
  import zipfile
  import zlib

  keys = [f"{split}_{part}" for split in SPLITS for part in ("images", "labels")]
  try:
    with zipfile.ZipFile(path) as archive:
      stored = {name[:-len(".npy")] for name in archive.namelist()
                if name.endswith(".npy")}
      missing = [key for key in keys if key not in stored]
      if missing:
        raise CnnjaxError(
            f"the MedMNIST file {path} lacks the arrays {', '.join(missing)}; "
            f"replace it with the official file from {DOWNLOAD_PAGE}")
      return {key: _read_member(archive, key + ".npy", row_limits.get(key))
              for key in keys}
  except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as error:
    raise CnnjaxError(
        f"cannot read the MedMNIST file {path} ({error}); delete it and "
        f"download it again from {DOWNLOAD_PAGE}") from error


def _read_member(archive, name: str, max_rows: int | None) -> np.ndarray:
  with archive.open(name) as stream:
    if max_rows is None:
      return np.lib.format.read_array(stream, allow_pickle=False)
    version = np.lib.format.read_magic(stream)
    read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read_header is not None:
      shape, fortran_order, dtype = read_header(stream)
      if shape and not fortran_order and not dtype.hasobject:
        rows = min(max_rows, shape[0])
        row_shape = tuple(shape[1:])
        num_bytes = rows * int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize
        buffer = stream.read(num_bytes)
        if len(buffer) != num_bytes:
          raise ValueError(f"'{name}' is truncated")
        return np.frombuffer(buffer, dtype).reshape((rows, *row_shape)).copy()
  with archive.open(name) as stream:  # An unusual layout: read it all.
    return np.lib.format.read_array(stream, allow_pickle=False)[:max_rows]


def _channels_last(info: SubsetInfo, image_size: int, images: np.ndarray,
                   path: str, split: str) -> np.ndarray:
  """Checks the official layout and adds the channel axis grey data lacks."""
  spatial = (image_size,) * (3 if info.volumetric else 2)
  stored = spatial + ((3,) if info.num_channels == 3 else ())  # In the file.
  wanted = spatial + (info.num_channels,)                      # What we return.
  if images.shape[1:] not in (stored, wanted):
    raise CnnjaxError(
        f"the MedMNIST file {path} holds {split} images of shape "
        f"{images.shape}, but '{info.flag}' at image_size {image_size} needs "
        f"(N, {', '.join(map(str, stored))}); check the file or the image_size")
  if images.dtype != np.uint8:
    raise CnnjaxError(
        f"the MedMNIST file {path} holds {split} images of type "
        f"{images.dtype}, not the official uint8; replace it with the file "
        f"from {DOWNLOAD_PAGE}")
  return images.reshape((len(images), *wanted))


def _labels(info: SubsetInfo, labels: np.ndarray, num_images: int, path: str,
            split: str) -> np.ndarray:
  """(N, 1) -> (N,) int32 for one label per example; (N, 14) for ChestMNIST."""
  width = info.num_classes if info.task == "multilabel" else 1
  shapes = [(num_images, width)] + ([(num_images,)] if width == 1 else [])
  integral = np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool
  if labels.shape not in shapes or not integral:
    raise CnnjaxError(
        f"the MedMNIST file {path} holds {split} labels of shape "
        f"{labels.shape} and type {labels.dtype}, but '{info.flag}' with "
        f"{num_images} {split} images needs integers of shape "
        f"({num_images}, {width})")
  labels = labels.astype(np.int32)
  return labels if info.task == "multilabel" else labels.reshape(-1)
