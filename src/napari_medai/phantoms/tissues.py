"""Label table and tissue attenuation (HU) of the chest phantom.

The label numbers are part of the public contract (segmentation models are trained on
them): 0 background, 1 lung, 2 nodule, then the other structures.
"""

from __future__ import annotations

BACKGROUND = 0  # air around the patient
LUNG = 1  # lung parenchyma (not its vessels, airways or nodules)
NODULE = 2  # every nodule, solid, part-solid or ground-glass
VESSEL = 3  # pulmonary vessel trees (arteries and veins), inside lungs and hila
AIRWAY = 4  # trachea and bronchi: lumen and wall
BONE = 5  # ribs, spine (vertebral bodies and arches), sternum, scapulae
HEART = 6
GREAT_VESSEL = 7  # aorta, pulmonary trunk, superior vena cava
LIVER = 8
FAT = 9  # subcutaneous and mediastinal fat
SOFT_TISSUE = 10  # muscle and other soft tissue (chest wall, oesophagus, discs, abdomen)
TABLE = 11  # scanner table

LABEL_NAMES = {
    BACKGROUND: "background",
    LUNG: "lung",
    NODULE: "nodule",
    VESSEL: "vessel",
    AIRWAY: "airway",
    BONE: "bone",
    HEART: "heart",
    GREAT_VESSEL: "great vessels",
    LIVER: "liver",
    FAT: "fat",
    SOFT_TISSUE: "soft tissue",
    TABLE: "table",
}

# Mean HU of each tissue before per-seed jitter (non-contrast CT at ~120 kVp).
HU = {
    "air": -1000.0,
    "lung": -905.0,  # aerated parenchyma; a gravity gradient and texture are added
    "fat": -118.0,
    "muscle": 40.0,
    "blood": 40.0,
    "liver": 60.0,
    "cortical_bone": 950.0,
    "cancellous_bone": 330.0,
    "rib_marrow": 300.0,
    "cartilage": 120.0,
    "disc": 85.0,
    "csf": 15.0,
    "table_shell": 250.0,
    "table_foam": -850.0,
    "solid_nodule": 30.0,
    "ground_glass": -450.0,
}
