"""Data: demographic profiles, survey items, loaders for public formats, splits, task shapes."""

from pluralign.data.items import SurveyItem
from pluralign.data.loaders import available_loaders, load_dataset, register_loader
from pluralign.data.profile import PROFILE_FIELDS, Profile
from pluralign.data.splits import Split, split_dataset
from pluralign.data.tasks import GroupExample, IndividualExample, SurveyDataset, mean_distributions

__all__ = [
    "PROFILE_FIELDS",
    "Profile",
    "SurveyItem",
    "SurveyDataset",
    "IndividualExample",
    "GroupExample",
    "Split",
    "split_dataset",
    "load_dataset",
    "register_loader",
    "available_loaders",
    "mean_distributions",
]
