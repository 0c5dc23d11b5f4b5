// facecat's page: copy buttons, the filter form's age check, the generate playground.
// Loaded from this origin only (the page's Content-Security-Policy forbids inline script).
"use strict";

(function () {
  const copyStatus = document.getElementById("copy-status");

  // --- copy buttons ---------------------------------------------------------------------

  function copyWithTextarea(text) {
    // For browsers without the async clipboard (or pages not served over HTTPS/localhost).
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand("copy");
    } catch (error) {
      ok = false;
    }
    area.remove();
    return ok;
  }

  async function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(text);
        return true;
      } catch (error) {
        // Permission refused: try the old way below.
      }
    }
    return copyWithTextarea(text);
  }

  function announce(message) {
    if (!copyStatus) return;
    copyStatus.textContent = "";
    // A fresh text node each time, so screen readers repeat "Copied" on a second copy.
    window.setTimeout(function () { copyStatus.textContent = message; }, 50);
  }

  document.addEventListener("click", async function (event) {
    const button = event.target.closest("button.copy");
    if (!button) return;
    const ok = await copyText(button.dataset.copy);
    const what = button.textContent.replace(/^Copy\s*/, "");
    announce(ok ? "Copied " + what : "Could not copy; select the text and copy it by hand.");
    const original = button.dataset.label || button.textContent;
    button.dataset.label = original;
    button.textContent = ok ? "Copied" : "Copy failed";
    window.setTimeout(function () { button.textContent = original; }, 1500);
  });

  // --- filter form: the maximum age may not be below the minimum -------------------------

  const minimum = document.getElementById("minimum_age");
  const maximum = document.getElementById("maximum_age");
  if (minimum && maximum) {
    const check = function () {
      const low = minimum.value === "" ? null : Number(minimum.value);
      const high = maximum.value === "" ? null : Number(maximum.value);
      maximum.setCustomValidity(
        low !== null && high !== null && high < low
          ? "The maximum age must not be below the minimum age." : "");
    };
    minimum.addEventListener("input", check);
    maximum.addEventListener("input", check);
    check();
  }

  // --- generate playground --------------------------------------------------------------

  const form = document.getElementById("generate-form");
  if (!form) return;
  const statusLine = document.getElementById("generate-status");
  const result = document.getElementById("generate-result");
  const strip = document.getElementById("lifetime-strip");
  const lifetimeButton = document.getElementById("lifetime-button");
  const field = function (id) { return document.getElementById(id).value.trim(); };

  function query(overrides) {
    const params = new URLSearchParams();
    const values = {
      gender: field("gen-gender"),
      age: field("gen-age"),
      seed: field("gen-seed"),
      resolution: field("gen-resolution"),
      image_format: field("gen-format"),
    };
    Object.assign(values, overrides || {});
    for (const [name, value] of Object.entries(values)) {
      if (value !== "" && value !== null && value !== undefined) params.set(name, value);
    }
    return params;
  }

  // A sentence for an error answer: the API's own `detail`, the status, and what to do.
  function explain(response, body) {
    const status = response.status + (response.statusText ? " " + response.statusText : "");
    const detail = body && body.detail ? body.detail : "The server answered without an explanation.";
    const parts = [detail];
    if (response.status === 403) {
      parts.push("Enter an API key of professional class or above to use a seed, or clear the seed.");
    } else if (response.status === 401) {
      parts.push("Check the API key, or clear it to generate anonymously.");
    } else if (response.status === 429) {
      if (body && body.hint) parts.push(body.hint);
      if (body && body.budget) parts.push("(Budget: " + body.budget + ".)");
    } else if (response.status === 503) {
      const retry = response.headers.get("Retry-After");
      if (retry) parts.push("Try again in " + retry + " seconds.");
    }
    return "Error " + status + ": " + parts.join(" ");
  }

  async function generate(params) {
    const headers = {};
    const key = field("api-key");
    if (key) headers.Authorization = "Token " + key;
    let response;
    try {
      response = await fetch(form.dataset.endpoint + "?" + params.toString(), { headers });
    } catch (error) {
      return { error: "The server could not be reached: " + error.message };
    }
    if (!response.ok) {
      let body = null;
      try {
        body = await response.json();
      } catch (error) {
        body = null;
      }
      return { error: explain(response, body) };
    }
    const blob = await response.blob();
    return {
      url: URL.createObjectURL(blob),
      age: response.headers.get("X-Face-Age"),
      gender: response.headers.get("X-Face-Gender"),
    };
  }

  function describe(params, face) {
    const asked = [params.get("gender") || "any gender", params.has("age") ? "age " + params.get("age") : "any age"];
    return "Generated face, asked for " + asked.join(", ") + "; the estimator sees " +
      (face.gender || "?") + ", about " + (face.age || "?") + ".";
  }

  function busy(on) {
    for (const button of form.querySelectorAll("button")) button.disabled = on;
    form.setAttribute("aria-busy", on ? "true" : "false");
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    if (!form.reportValidity()) return;
    busy(true);
    statusLine.textContent = "Generating…";
    const params = query();
    const face = await generate(params);
    busy(false);
    result.replaceChildren();
    if (face.error) {
      statusLine.textContent = face.error;
      statusLine.className = "status error";
      return;
    }
    const img = document.createElement("img");
    img.src = face.url;
    img.alt = describe(params, face);
    result.appendChild(img);
    statusLine.textContent = img.alt;
    statusLine.className = "status";
  });

  lifetimeButton.addEventListener("click", async function () {
    if (!form.reportValidity()) return;
    const seed = field("gen-seed") || String(1 + Math.floor(Math.random() * 1000000));
    document.getElementById("gen-seed").value = seed;
    const ages = form.dataset.ages.split(",");
    busy(true);
    strip.replaceChildren();
    statusLine.className = "status";
    for (const age of ages) {
      statusLine.textContent = "Seed " + seed + ": generating age " + age + "…";
      const params = query({ seed: seed, age: age, resolution: Math.min(256, Number(field("gen-resolution")) || 256) });
      const face = await generate(params);
      if (face.error) {
        statusLine.textContent = face.error;
        statusLine.className = "status error";
        break;
      }
      const item = document.createElement("li");
      const figure = document.createElement("figure");
      const img = document.createElement("img");
      img.src = face.url;
      img.alt = "Seed " + seed + " asked at age " + age + "; the estimator sees " +
        (face.gender || "?") + ", about " + (face.age || "?") + ".";
      const caption = document.createElement("figcaption");
      caption.textContent = "asked " + age + " · seen " + (face.age || "?");
      figure.append(img, caption);
      item.appendChild(figure);
      strip.appendChild(item);
      if (age === ages[ages.length - 1]) statusLine.textContent = "Seed " + seed + " at " + ages.length + " ages.";
    }
    busy(false);
  });
})();
