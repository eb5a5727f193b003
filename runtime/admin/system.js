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
    say("Uploading and installing " + file.name + " (" + Math.round(file.size / 1048576) +
        " MiB)...", false);
    fetch("/system/upgrade?confirm=yes&restart=" + restart, {
      method: "PUT", body: file, credentials: "same-origin", cache: "no-store",
      headers: {"Content-Type": "application/octet-stream",
                "X-Lockgate-CSRF": form.getAttribute("data-csrf")}
    }).then(function (response) {
      return response.json().then(function (doc) { return [response.status, doc]; },
                                  function () { return [response.status, {}]; });
    }).then(function (result) {
      var doc = result[1];
      button.disabled = false;
      if (result[0] === 200) {
        say("Installed " + doc.version + " into slot " + doc.slot +
            (doc.restart ? "; the appliance restarts into it now." :
             "; reload this page to see it."), false);
      } else {
        say("Refused: " + (doc.error_text || ("HTTP " + result[0])), true);
      }
    }, function (err) {
      button.disabled = false;
      say("The upload failed: " + err, true);
    });
  });
}());
