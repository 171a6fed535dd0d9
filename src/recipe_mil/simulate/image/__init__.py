"""Simulated blood-smear cohorts: single white-cell crops with a known ground truth (docs/method.md §8).

Every crop shows one white blood cell near its centre on a pale background with a few
red blood cells. The cell types and their look (Giemsa / May-Grünwald-Giemsa style):

===============  ===================================================================
``neutrophil``   segmented nucleus (2-4 lobes joined by thin filaments), pale lilac
                 cytoplasm with fine granules
``lymphocyte``   small cell, round dense nucleus, thin rim of light-blue cytoplasm
``monocyte``     large cell, kidney-shaped nucleus with lacy chromatin, grey-blue
                 cytoplasm with a few vacuoles
``myeloblast``   large round nucleus with fine chromatin and 1-3 nucleoli, high
                 nucleus-to-cell ratio, deep-blue (basophilic) cytoplasm
``eosinophil``   bilobed nucleus, cytoplasm packed with orange-red granules
===============  ===================================================================

and two morphologies that only disease-only cell types use (:data:`DISEASE_ONLY_MORPHOLOGIES`):

=========================  =========================================================
``abnormal_promyelocyte``  large cell, eccentric oval nucleus with a nucleolus,
                           cytoplasm packed with coarse purple azurophilic granules
                           and 0-3 Auer rods (as in acute promyelocytic leukaemia)
``smudge_cell``            a ruptured cell: a pale, smeared, irregular nucleus with
                           streaky chromatin and no cytoplasm (as in CLL)
=========================  =========================================================

Images are rendered in optical density (Beer-Lambert): every structure adds a stain
concentration times a stain colour vector, and ``RGB = background * exp(-OD)``. Each
cell gets its own size, rotation, shape and stain jitter; each patient a stain and size
factor; a cohort a stain shift (``stain_shift``: stronger blue absorbance, weaker red,
a yellower background), which is how the external cohort differs.

A patient of class ``c`` draws its proportions from ``Dirichlet(concentration * m_c)``, its
number of crops from a clipped normal and its cell types from a multinomial, as in the scRNA-seq
simulator. What a re-mix of cell-type proportions does not capture comes on top (see
:mod:`recipe_mil.simulate.common`):

- *disease-only cell types* (``disease_only``): a class's own morphology ``{class}_only``
  (``disease_only_morphology``; built in: ``aml`` abnormal promyelocytes), present only in that
  class;
- *state shifts* (``state_shift``, ``state_shift_magnitude``): in a class, a fraction of a shared
  cell type's cells change their look along :data:`STATE_SHIFT_DIRECTIONS` (dysplastic
  neutrophils: hypogranular and hyposegmented; reactive lymphocytes: larger with more, bluer
  cytoplasm; ...), by ``state_shift_magnitude`` times each direction;
- *patient effects* (``patient_stain_sd``, ``patient_size_sd``): every patient's stain and
  cell size factors (slide preparation, staining batch).

Every patient has its own random streams (derived from ``seed``, the cohort and the patient id),
so a patient's crops do not depend on the other patients.

The package's modules: ``params`` (cell types, :class:`ImageSimParams`), ``render`` (one crop),
``cohort`` (:func:`simulate_image_cohort`) and ``truth`` (the truth read back); every public name is
importable from here.
"""

from recipe_mil.simulate.common import cohort_design
from recipe_mil.simulate.image.cohort import (
    PatientCrops,
    external_image_params,
    simulate_image_cohort,
    simulate_patient_images,
    write_image,
)
from recipe_mil.simulate.image.params import (
    CELL_TYPES,
    DEFAULT_CLASS_PROPORTIONS,
    DISEASE_ONLY_MORPHOLOGIES,
    STATE_SHIFT_DIRECTIONS,
    TRUTH_JSON,
    TRUTH_TSV,
    ImageSimParams,
    class_mean_proportions,
)
from recipe_mil.simulate.image.render import render_cell
from recipe_mil.simulate.image.truth import crop_truth, read_image_truth

__all__ = [
    "CELL_TYPES",
    "DEFAULT_CLASS_PROPORTIONS",
    "DISEASE_ONLY_MORPHOLOGIES",
    "ImageSimParams",
    "PatientCrops",
    "STATE_SHIFT_DIRECTIONS",
    "TRUTH_JSON",
    "TRUTH_TSV",
    "class_mean_proportions",
    "cohort_design",
    "crop_truth",
    "external_image_params",
    "read_image_truth",
    "render_cell",
    "simulate_image_cohort",
    "simulate_patient_images",
    "write_image",
]
