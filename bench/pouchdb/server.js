const express = require('express');
const PouchDB = require('pouchdb');
const dir = process.argv[2];
const P = PouchDB.defaults({prefix: dir + '/'});
const app = express();
app.use('/', require('express-pouchdb')(P, {logPath: dir + '/log.txt', mode: 'minimumForPouchDB'}));
// A CouchDB-compatible server on loopback for PouchDB replication.
const server = app.listen(0, '127.0.0.1', () => { console.log('port ' + server.address().port); });
