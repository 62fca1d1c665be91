// The study viewer: the CT in grey with the segmentation overlaid by label colour.
// Presigned URLs live at most five minutes, so they are fetched fresh on every page load.
import { Niivue, SLICE_TYPE, SHOW_RENDER } from "../vendor/niivue/index.js";

const SLICE_TYPES = {
  multiplanar: SLICE_TYPE.MULTIPLANAR,
  axial: SLICE_TYPE.AXIAL,
  coronal: SLICE_TYPE.CORONAL,
  sagittal: SLICE_TYPE.SAGITTAL,
  render: SLICE_TYPE.RENDER,
};

const container = document.getElementById("viewer");
const statusLine = document.getElementById("viewer-status");
const legend = document.getElementById("legend");
const opacityInput = document.getElementById("opacity");

function formatVolume(volumeMl) {
  const locale = document.documentElement.lang || "pt-BR";
  return `${new Intl.NumberFormat(locale, { maximumFractionDigits: 1 }).format(volumeMl)} mL`;
}

function buildLegend(labels, missing, onToggle) {
  legend.replaceChildren();
  for (const label of labels) {
    const item = document.createElement("li");
    const checkbox = document.createElement("input");
    checkbox.type = "checkbox";
    checkbox.checked = true;
    checkbox.id = `label-${label.key}`;
    checkbox.dataset.labelValue = String(label.value);
    checkbox.addEventListener("change", () => onToggle(label.value, checkbox.checked));
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.backgroundColor = label.color;
    const text = document.createElement("label");
    text.htmlFor = checkbox.id;
    text.textContent = label.name;
    const volume = document.createElement("span");
    volume.className = "volume";
    volume.textContent = formatVolume(label.volume_ml);
    item.append(checkbox, swatch, text, volume);
    legend.append(item);
  }
  // Requested categories the segmentation did not find are listed, not silently dropped.
  for (const label of missing) {
    const item = document.createElement("li");
    item.className = "absent";
    item.dataset.labelKey = label.key;
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.backgroundColor = label.color;
    const text = document.createElement("span");
    text.textContent = `${label.name}: ${legend.dataset.absentText}`;
    item.append(swatch, text);
    legend.append(item);
  }
}

function imageOptions(data) {
  const options = { url: data.image_url, name: "image.nii.gz", colormap: "gray" };
  if (data.window_hu) {
    // The CT window of the portal's settings (DICOM_WINDOW_CENTER and _WIDTH).
    [options.cal_min, options.cal_max] = data.window_hu;
  }
  return options;
}

async function start() {
  const response = await fetch(container.dataset.source, { credentials: "same-origin" });
  if (!response.ok) {
    throw new Error(`viewer data request failed with status ${response.status}`);
  }
  const data = await response.json();
  // Radiological convention: the patient's right is on the left of the screen, as
  // radiologists read CT and MR.
  const niivue = new Niivue({
    isRadiologicalConvention: true,
    backColor: [0, 0, 0, 1],
    show3Dcrosshair: true,
    multiplanarShowRender: SHOW_RENDER.ALWAYS,
    isColorbar: false,
  });
  await niivue.attachToCanvas(document.getElementById("niivue-canvas"));
  // The URL ends in a signed query string, so the name gives NiiVue the file format.
  await niivue.loadVolumes([
    imageOptions(data),
    { url: data.mask_url, name: "mask.nii.gz", opacity: Number(opacityInput.value) / 100 },
  ]);
  const mask = niivue.volumes[1];
  const colormap = structuredClone(data.colormap);
  mask.setColormapLabel(colormap);
  niivue.updateGLVolume();
  niivue.setSliceType(SLICE_TYPE.MULTIPLANAR);

  buildLegend(data.labels, data.missing_labels || [], (value, visible) => {
    colormap.A[value] = visible ? 255 : 0;
    mask.setColormapLabel(structuredClone(colormap));
    niivue.updateGLVolume();
  });
  opacityInput.addEventListener("input", () => {
    niivue.setOpacity(1, Number(opacityInput.value) / 100);
  });
  for (const button of document.querySelectorAll("[data-slice-type]")) {
    button.addEventListener("click", () => niivue.setSliceType(SLICE_TYPES[button.dataset.sliceType]));
  }
  statusLine.textContent = "";
  container.dataset.state = "ready";
}

start().catch((error) => {
  console.error(error);
  statusLine.textContent = container.dataset.errorMessage;
  container.dataset.state = "error";
});
