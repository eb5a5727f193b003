// The System page's bundle upload: sends the chosen file as the request body of
// PUT /system/upgrade (the REST API's streamed upload path, never held in memory on the
// appliance), with the session's CSRF token in a header, and shows the outcome or the
// refusal's one-line reason. Served from 9090 itself; the CSP allows no inline script.
"use strict";
(function () {
  var form = document.getElementById("upload");
  if (!form) { return; }
  var status = document.getElementById("upload-status");
  var button = document.getElementById("upload-button");
  function say(text, bad) {
    status.textContent = text;
    status.className = bad ? "error" : "hint";
  }
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var file = document.getElementById("bundle").files[0];
    if (!file || !document.getElementById("upload-confirm").checked) {
      say("Choose a bundle and confirm first.", true);
      return;
    }
    var restart = document.getElementById("upload-restart").checked ? "yes" : "no";
    button.disabled = true;
    var mib = (file.size / 1048576).toFixed(1);
    say("Uploading " + file.name + " (" + mib + " MiB)...", false);
    // XMLHttpRequest rather than fetch: it reports the upload's progress. The browser
    // sends the file from disk as the body; the appliance streams it to its data disk.
    var xhr = new XMLHttpRequest();
    xhr.open("PUT", "/system/upgrade?confirm=yes&restart=" + restart);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.setRequestHeader("X-Lockgate-CSRF", form.getAttribute("data-csrf"));
    xhr.upload.onprogress = function (e) {
      if (e.lengthComputable) {
        var pct = Math.floor(100 * e.loaded / e.total);
        say(pct < 100 ? "Uploading " + file.name + ": " + pct + " % of " + mib + " MiB" :
            "Uploaded; verifying the signature and writing slot...", false);
      }
    };
    xhr.onload = function () {
      var doc = {};
      try { doc = JSON.parse(xhr.responseText); } catch (ignored) { doc = {}; }
      button.disabled = false;
      if (xhr.status === 200) {
        say("Installed " + doc.version + " into slot " + doc.slot +
            (doc.restart ? "; the appliance restarts into it now." :
             "; reload this page to see it."), false);
      } else {
        say("Refused: " + (doc.error_text || ("HTTP " + xhr.status)), true);
      }
    };
    xhr.onerror = function () {
      button.disabled = false;
      say("The upload failed: the connection was lost.", true);
    };
    xhr.send(file);
  });
}());
